"""What the network did: recording its internal maps and rendering them as pictures."""
