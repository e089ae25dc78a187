# anchor/: the modules of tagproof-anchor — the ledger adapters, the Merkle log in PostgreSQL,
# the scan cache's view of it, and the scheduler that drives them.
tp_module(ledger DIR anchor
          SOURCES ${CMAKE_CURRENT_LIST_DIR}/ledger_http.c ${CMAKE_CURRENT_LIST_DIR}/ledger_eth.c
          DEPS log LIBS PkgConfig::LIBCURL PkgConfig::JANSSON)
tp_module(tlog DIR anchor DEPS merkle note uuid LIBS PkgConfig::LIBPQ)
tp_module(cachesync DIR anchor DEPS config log metrics redis scancache
          LIBS PkgConfig::LIBPQ PkgConfig::LIBEVENT PkgConfig::JANSSON)
tp_module(anchor DIR anchor DEPS config log metrics merkle note ledger tlog cachesync
          LIBS PkgConfig::LIBPQ PkgConfig::LIBCURL PkgConfig::JANSSON)
