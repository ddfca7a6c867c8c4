"""Source: datagrams in."""
