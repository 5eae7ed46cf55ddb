"""The safety stages' runners (worker layer): NudeNet for level `light`.

The pure parts (verdict, policy, gate) are in cutout_fleet.safety; this package loads models.
`capabilities` imports nothing heavy until asked, so the control command can use it cheaply.
"""
