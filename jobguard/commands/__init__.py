"""The commands: drain, restore and status. They know nothing of which store they use."""
