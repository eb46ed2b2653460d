"""The ImmunoDiff module's own code beside its file: the inputs and the logic."""
