"""`python -m synthsieve`: the same as the `synthsieve` command."""

from synthsieve.cli import console_main

console_main()
