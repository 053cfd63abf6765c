"""The text domain of the quality benchmark: task LoRAs on a real pretrained sentence encoder
(all-MiniLM-L6-v2, shipped inside a PyPI wheel) with frozen zero-shot heads. See ../README.md."""
