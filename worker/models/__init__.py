"""Models at run time: one onnxruntime runner for every spec, and the `models pull` downloader."""
