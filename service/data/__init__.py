"""Datasets as data: CSV and Parquet through pyarrow, NPZ checked from its headers, one canonical
parsed form. Imports the contract only (and numpy, pyarrow): the API and the worker both read here."""
