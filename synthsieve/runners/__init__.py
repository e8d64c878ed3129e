"""Runner choice and runner infrastructure: which Beam runner a job gets, synthsieve's Dask
runner, the cluster launch command, and the acknowledge-after-commit relay for Pub/Sub."""
