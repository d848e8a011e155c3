"""Import of member and activity files (CSV and XLSX) into the ledger.

Each stage is a module. ``reading`` turns bytes into rows of text with
their line numbers, and ``columns`` maps headers to columns. ``cleaning``
turns text into typed records or row issues. The writers save a whole file
with a fixed number of queries per chunk of rows, and ``service`` runs the
stages in one transaction.
"""
