"""Benchmarks: one command each (`python -m bench.<name>`), printing the tables the docs quote."""


def run_tables(doc: str, tables: dict) -> None:
    """A benchmark's command line: one flag per group of tables (`--name`), every table when
    none is given. `tables` maps a flag name to the functions that print its tables."""
    import argparse

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in tables:
        parser.add_argument(f"--{name}", action="store_true")
    args = vars(parser.parse_args())
    every = not any(args.values())
    for name, printers in tables.items():
        if every or args[name]:
            for printer in printers:
                printer()
