"""Pure image functions: numpy/PIL in, numpy/PIL out.  No storage, queue or model-runtime imports here."""
