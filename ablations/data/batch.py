"""The batch contract between the data and the model.

Every DataLoader of the harness yields a dict with these keys (int64 unless noted), the content of
NVIDIA's pretraining HDF5 shards (lamb-implementations.md §3.2) with BERT/transformers names:

- ``input_ids`` [B, L]: token ids, [CLS] A [SEP] B [SEP] then 0 padding.
- ``token_type_ids`` [B, L]: 0 for segment A (and padding), 1 for segment B (``segment_ids``).
- ``attention_mask`` [B, L]: 1 for real tokens, 0 for padding (``input_mask``).
- ``masked_lm_positions`` [B, P]: positions of the masked tokens, zero-padded to
  P = max_predictions (NVIDIA: a 0 ends the list; position 0 is [CLS], never masked).
- ``masked_lm_ids`` [B, P]: the original token id at each masked position (0 in padding).
- ``masked_lm_weights`` [B, P] float32: 1.0 for real predictions, 0.0 for padding.
- ``next_sentence_labels`` [B]: 0 if B follows A in the corpus ("IsNext"), 1 if random.
"""

BATCH_KEYS = (
    "input_ids",
    "token_type_ids",
    "attention_mask",
    "masked_lm_positions",
    "masked_lm_ids",
    "masked_lm_weights",
    "next_sentence_labels",
)
