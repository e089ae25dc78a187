# factory-api/: the factory API's own modules (linked into tagproof-factory only).
# The command-line client's own pieces (requests to the API, progress for people), which
# programs.cmake keeps out of tagproof-factory.
tp_module(client DIR factory-api LIBS PkgConfig::LIBCURL PkgConfig::JANSSON)
tp_module(progress DIR factory-api)
tp_module(apikey DIR factory-api LIBS PkgConfig::OPENSSL)
tp_module(ratelimit DIR factory-api DEPS redis LIBS PkgConfig::OPENSSL)
tp_module(db DIR factory-api DEPS pg LIBS PkgConfig::LIBPQ)
tp_module(api DIR factory-api DEPS proxies apikey ratelimit db jwt jwks http log metrics pg redis service uuid LIBS PkgConfig::JANSSON PkgConfig::LIBPQ)
tp_module(ingest DIR factory-api DEPS csv LIBS PkgConfig::JANSSON)
tp_module(loader DIR factory-api DEPS ingest db csv log pg redis service LIBS PkgConfig::JANSSON PkgConfig::OPENSSL PkgConfig::LIBEVENT)
tp_module(proof DIR factory-api DEPS merkle note uuid LIBS PkgConfig::JANSSON)
