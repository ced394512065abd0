"""The `sftflow` command line: the one package allowed above flows/ (it imports them lazily)."""
