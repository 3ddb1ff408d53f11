"""Reading exported artifacts without the exporter: the manifest and its verification, content
keys of what graphs are built from, the content-keyed cache, the directory lock, and the
TensorRT import seam with its engine validity check.

`pahi_rt.export` writes artifact directories and imports this package; `pahi_rt.runtime` reads
them through this package alone (it imports nothing from `export`). A run that has to export on
first use gets the exporter passed in (`first_use.Exporter`) by the command layer.
"""
