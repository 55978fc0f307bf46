"""Analysis over collected tables, shared by every study: statistics (``stats``), the report
table (``report``), the comparison of variants (``compare``), figure helpers and the headless
notebook runner (``figures``), the README's generated tables (``readme``) and publishing a
finished study into ``reproduction/`` (``reproduction``). A study of its own lives in
:mod:`ablations.studies`."""
