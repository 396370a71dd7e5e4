"""Other tools' adapter folders in and out: each module reads and writes one tool's format without importing it."""
