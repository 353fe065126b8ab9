"""Reference classifiers scored beside the network (``py4dstem-gnn evaluate --rf / --reference``).

``forest``        the random forest of Gleason et al. on radial-angular spot features
``reference``     gradient boosting on the lattice descriptors of :mod:`py4dstem_gnn.geometry`
``hierarchical``  their shared skeleton: a crystal-system head, a space-group head per system, joblib I/O

Both return a :class:`py4dstem_gnn.predict.Prediction`, the object :mod:`py4dstem_gnn.evaluation` scores.
Training on kinematic patterns: ``benchmarks/train_reference.py --kind rf|gb``.
"""
