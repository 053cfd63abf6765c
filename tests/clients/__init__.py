"""loramerge outputs loaded by the real clients (diffusers + PEFT, ComfyUI's own loader code).

Every test writes a file with loramerge (``convert`` or ``merge``), loads it with the client's own
loader into fresh tiny models built with the fixture's seeds, lets the client fuse/patch it, and
compares every weight of the models: adapted weights equal base + the expected ΔW, all others are
bit-for-bit unchanged, and no key of the file is left unloaded.
"""
