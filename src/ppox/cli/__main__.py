from ppox.cli import console

console()
