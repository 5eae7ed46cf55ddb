"""Models as data: specs in a catalogue, one runner for all, and the `models pull` downloader."""
