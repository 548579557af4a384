"""The ``s4-journal`` subcommands, one module per job (tools/journal_cli.py is the argparse entry): ``dump`` and
``export`` (over the event selection of ``events``), ``verify``, ``replay`` and ``repair``."""
