"""BERT for pretraining from ``transformers`` modules, with NVIDIA's sparse masked-LM head.

:class:`BertPretraining` is ``BertForPreTraining`` (same modules, same parameter names, decoder
tied to the word embeddings) with one difference taken from NVIDIA's DeepLearningExamples BERT:
the masked-LM head runs only on the masked positions. ``transformers`` projects every position
onto the vocabulary and ignores all but ~15% of them in the loss; here the encoder output is
gathered at ``masked_lm_positions`` first, so the head's cost is ``num_masked x vocab`` instead of
``batch x seq_len x vocab``. The loss is the same number (a test checks it against
``BertForPreTraining`` with copied weights).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import BertConfig, BertModel
from transformers.models.bert.modeling_bert import BertPreTrainingHeads

from ablations.config import MODEL_SIZES, ModelConfig


def bert_config(model: ModelConfig, vocab_size: int) -> BertConfig:
    """The ``transformers`` config of ``model`` with ``vocab_size`` tokens (no download)."""
    size = MODEL_SIZES[model.size]
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=size["hidden"],
        num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"],
        intermediate_size=size["intermediate"],
        hidden_dropout_prob=model.dropout,
        attention_probs_dropout_prob=model.dropout,
        max_position_embeddings=model.max_position_embeddings,
        type_vocab_size=2,
        initializer_range=model.initializer_range,
    )


class BertPretraining(nn.Module):
    """``BertModel`` (with pooler) + ``BertPreTrainingHeads``; loss = masked-LM CE + NSP CE.

    Parameter names equal ``BertForPreTraining``'s (``bert.*``, ``cls.*``), so NVIDIA's no-decay
    substrings (``bias``, ``LayerNorm``) select the same tensors and state dicts are exchangeable.

    Args:
        model: size, dropout, initializer range, max_position_embeddings.
        vocab_size: number of token ids (from the tokenizer of the data).
    """

    def __init__(self, model: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.config = bert_config(model, vocab_size)
        self.vocab_size = vocab_size
        self.bert = BertModel(self.config, add_pooling_layer=True)
        self.cls = BertPreTrainingHeads(self.config)
        # Tied as BertForPreTraining ties them (_tied_weights_keys): the decoder is the word
        # embedding matrix, and its bias is the head's own ``bias`` parameter.
        predictions = self.cls.predictions
        predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight
        predictions.decoder.bias = predictions.bias
        self._ids_checked = False
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """BERT's init: N(0, initializer_range) for linear and embedding weights, zero biases and
        padding row, LayerNorm (1, 0); the tied decoder is initialized once, as the embedding."""
        std = self.config.initializer_range
        decoder = self.cls.predictions.decoder
        for module in self.modules():
            if module is decoder:
                continue
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, std)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        self.cls.predictions.bias.zero_()

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Losses and counts of one batch (keys of :mod:`ablations.data.batch`).

        Returns:
            ``loss`` (= ``mlm_loss + nsp_loss``), ``mlm_loss`` (CE averaged over the real
            predictions, those with ``masked_lm_weights > 0``), ``nsp_loss`` (CE averaged over
            the batch), ``mlm_correct``, ``mlm_count``, ``nsp_correct`` (0-d tensors), and the
            logits ``mlm_logits`` [num_masked, vocab] and ``nsp_logits`` [batch, 2].

        Raises:
            ValueError: a token id is >= ``vocab_size`` (checked on every CPU batch, where it is
                free, and on the first batch elsewhere, where it costs a host sync).
        """
        input_ids = batch["input_ids"]
        if not self._ids_checked:
            self._check_ids(batch)
        out = self.bert(
            input_ids,
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            return_dict=True,
        )
        sequence, pooled = out.last_hidden_state, out.pooler_output
        b, length, hidden = sequence.shape

        # NVIDIA's sparse head: gather the real predictions (weight > 0) before the head.
        keep = batch["masked_lm_weights"] > 0
        offsets = torch.arange(b, device=input_ids.device).unsqueeze(1) * length
        rows = (batch["masked_lm_positions"] + offsets)[keep]
        labels = batch["masked_lm_ids"][keep]
        mlm_logits = self.cls.predictions(
            sequence.reshape(b * length, hidden).index_select(0, rows)
        )
        mlm_count = keep.sum()
        mlm_sum = F.cross_entropy(mlm_logits.float(), labels, reduction="sum")
        mlm_loss = mlm_sum / mlm_count.clamp(min=1)

        nsp_labels = batch["next_sentence_labels"]
        nsp_logits = self.cls.seq_relationship(pooled)
        nsp_loss = F.cross_entropy(nsp_logits.float(), nsp_labels)
        with torch.no_grad():
            mlm_correct = (mlm_logits.argmax(-1) == labels).sum()
            nsp_correct = (nsp_logits.argmax(-1) == nsp_labels).sum()
        return {
            "loss": mlm_loss + nsp_loss,
            "mlm_loss": mlm_loss,
            "nsp_loss": nsp_loss,
            "mlm_correct": mlm_correct,
            "mlm_count": mlm_count,
            "nsp_correct": nsp_correct,
            "mlm_logits": mlm_logits,
            "nsp_logits": nsp_logits,
        }

    def _check_ids(self, batch: dict[str, Tensor]) -> None:
        ids = batch["input_ids"]
        if ids.device.type != "cpu":
            self._ids_checked = True  # once: the check reads a value on the host
        top = int(torch.maximum(ids.max(), batch["masked_lm_ids"].max()))
        if top >= self.vocab_size:
            raise ValueError(
                f"vocab/model size mismatch: the batch has token id {top} but the model's "
                f"vocab_size is {self.vocab_size}"
            )
