"""Making data: the structure pool, orientations, kinematic and Bloch-wave simulation, augmentation, stored sets."""
