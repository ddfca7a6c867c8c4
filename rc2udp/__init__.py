"""rc2udp: feed a bridge from a wiki's API, or replay recorded changes, over UDP."""
