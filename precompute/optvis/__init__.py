"""Feature visualisation: image parameterisations, transforms, objectives and the one optimisation loop.

Split as in Lucid/Lucent's optvis: `param`, `transforms` and `objectives` hold small pure functions;
`render.render` is the only loop and returns arrays (it never shows or saves anything); `prepare` makes the
fast private copy of the model that the loop runs; `presets` holds the settings as data.
"""
