"""``immunodiff review``: the radiologist's review as a local web app on trame-slicer.

``session``: the review without its page (CT, point, clinical form, one run at a time, results
as MRML nodes, Save); ``page``: the trame-slicer page bound to it. Like ``mrml``, this package
imports Slicer's MRML (through trame-slicer); nothing else in the library does.
"""
