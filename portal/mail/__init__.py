"""Email understanding for Tidemark: parse, classify, fingerprint, references, cut, explain, extract.

Pure Python: nothing here imports Flask, SQLAlchemy or RQ.
"""
