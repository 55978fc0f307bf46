"""Analysis over collected tables, shared by every study: statistics (``stats``), the report
table (``report``), the comparison of variants (``compare``), the notebooks' plot helpers
(``figures``), the headless notebook runner (``notebooks``; its command is still
``python -m ablations.analysis.figures run``), where results and figures live (``locations``),
the README's generated tables (``readme``) and publishing a finished study into
``reproduction/`` (``reproduction``). A study of its own lives in :mod:`ablations.studies`."""
