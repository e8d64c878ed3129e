"""`python -m synthsieve.cli`."""

from synthsieve.cli.main import console_main

console_main()
