"""Parts of bench/scale.py (the operator at N LargeModelServices): `api` (the API server through
the official client), `objects` (what is created), `recorder` (watches and the bench's kubelet),
`setup` (the cluster), `phases` (what is measured), `measure` and `report` (figures and JSON)."""
