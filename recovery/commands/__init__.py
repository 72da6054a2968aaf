"""CLI subcommands, one module each: ``add_arguments(parser)`` and ``run(args) -> int``.

They parse, call the engine, and print; errors propagate to ``cli.main()``.
"""
