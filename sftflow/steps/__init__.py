"""The codelab's steps, one module each: a function that does a step's work, saves its files and
returns the record (sftflow.records) the next step receives. Tasks wrap them (cache, retries,
artifacts); progress comes out through an `on_progress(done, total, info)` argument."""
