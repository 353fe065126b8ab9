"""py4dstem-gnn: crystal-system and space-group maps from 4D-STEM Bragg vectors."""
