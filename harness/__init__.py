"""Throwaway servers (Prosody, ejabberd, MediaWiki) and the demo, for a clone only.

Tests, benchmarks and ``make demo`` use these; they are not part of the
installed package (the wheel holds only what operators, bots and researchers run).
"""
