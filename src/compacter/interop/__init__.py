"""Other libraries' adapter folders, read and written: AdapterHub (`adapters`)."""
