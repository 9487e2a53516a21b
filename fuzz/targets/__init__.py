"""One module per parser; each defines ``TARGET`` (see :class:`fuzz.target.Target`)."""
