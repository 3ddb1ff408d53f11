"""Users' feedback as data: records (JSONL, one thumbs-up/down or pair per line), their field
checks, collection from pahi-rt images, and the live SQLite store of `pahi-rt serve`. Training
from them lives in `training/`."""
