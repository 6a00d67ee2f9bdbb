"""`python -m distributed_something` is the `ds` command."""

from distributed_something.cli.entry import main

if __name__ == "__main__":
    main()
