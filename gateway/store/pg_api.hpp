// libpq, loaded when first used (dlopen of libpq.so.5) rather than linked: a process on the
// SQLite engine never maps libpq nor what libpq pulls in (gnutls, p11-kit, krb5, ldap, sasl and
// more: ~3.2 MB of idle RSS whose constructors run at start; bench/README.md 6h).
//
// Include this instead of <libpq-fe.h>: it declares libpq's types as usual, and after it every
// PQ* function used by the engine names the loaded one, so calls read as libpq's own. The
// first call loads the library; if it is missing (Debian package libpq5) or lacks a function,
// that call throws store_error, and the next one tries again.

#pragma once

#include <libpq-fe.h>

namespace segue::store::pg {

#define SEGUE_PQ_FUNCTIONS(X) \
    X(PQclear)                \
    X(PQcmdTuples)            \
    X(PQconnectdb)            \
    X(PQconnectdbParams)      \
    X(PQconninfo)             \
    X(PQconninfoFree)         \
    X(PQconsumeInput)         \
    X(PQenterPipelineMode)    \
    X(PQerrorMessage)         \
    X(PQescapeIdentifier)     \
    X(PQexec)                 \
    X(PQexecParams)           \
    X(PQexecPrepared)         \
    X(PQexitPipelineMode)     \
    X(PQfinish)               \
    X(PQflush)                \
    X(PQfreemem)              \
    X(PQgetisnull)            \
    X(PQgetlength)            \
    X(PQgetResult)            \
    X(PQgetvalue)             \
    X(PQisBusy)               \
    X(PQnotifies)             \
    X(PQntuples)              \
    X(PQpipelineStatus)       \
    X(PQpipelineSync)         \
    X(PQprepare)              \
    X(PQresultErrorField)     \
    X(PQresultErrorMessage)   \
    X(PQresultStatus)         \
    X(PQsendFlushRequest)     \
    X(PQsendPrepare)          \
    X(PQsendQuery)            \
    X(PQsendQueryParams)      \
    X(PQsendQueryPrepared)    \
    X(PQsetNoticeProcessor)   \
    X(PQsetnonblocking)       \
    X(PQsocket)               \
    X(PQstatus)               \
    X(PQtransactionStatus)

struct pq_functions {
#define SEGUE_PQ_MEMBER(name) decltype(&::name) name;
    SEGUE_PQ_FUNCTIONS(SEGUE_PQ_MEMBER)
#undef SEGUE_PQ_MEMBER
};

// The loaded functions (loading them on first use; throws store_error if that fails).
const pq_functions& pq();

// Whether this process has loaded libpq (for tests).
bool pq_loaded() noexcept;

}  // namespace segue::store::pg

#ifndef SEGUE_PQ_DEFINING
#define PQclear (::segue::store::pg::pq().PQclear)
#define PQcmdTuples (::segue::store::pg::pq().PQcmdTuples)
#define PQconnectdb (::segue::store::pg::pq().PQconnectdb)
#define PQconnectdbParams (::segue::store::pg::pq().PQconnectdbParams)
#define PQconninfo (::segue::store::pg::pq().PQconninfo)
#define PQconninfoFree (::segue::store::pg::pq().PQconninfoFree)
#define PQconsumeInput (::segue::store::pg::pq().PQconsumeInput)
#define PQenterPipelineMode (::segue::store::pg::pq().PQenterPipelineMode)
#define PQerrorMessage (::segue::store::pg::pq().PQerrorMessage)
#define PQescapeIdentifier (::segue::store::pg::pq().PQescapeIdentifier)
#define PQexec (::segue::store::pg::pq().PQexec)
#define PQexecParams (::segue::store::pg::pq().PQexecParams)
#define PQexecPrepared (::segue::store::pg::pq().PQexecPrepared)
#define PQexitPipelineMode (::segue::store::pg::pq().PQexitPipelineMode)
#define PQfinish (::segue::store::pg::pq().PQfinish)
#define PQflush (::segue::store::pg::pq().PQflush)
#define PQfreemem (::segue::store::pg::pq().PQfreemem)
#define PQgetisnull (::segue::store::pg::pq().PQgetisnull)
#define PQgetlength (::segue::store::pg::pq().PQgetlength)
#define PQgetResult (::segue::store::pg::pq().PQgetResult)
#define PQgetvalue (::segue::store::pg::pq().PQgetvalue)
#define PQisBusy (::segue::store::pg::pq().PQisBusy)
#define PQnotifies (::segue::store::pg::pq().PQnotifies)
#define PQntuples (::segue::store::pg::pq().PQntuples)
#define PQpipelineStatus (::segue::store::pg::pq().PQpipelineStatus)
#define PQpipelineSync (::segue::store::pg::pq().PQpipelineSync)
#define PQprepare (::segue::store::pg::pq().PQprepare)
#define PQresultErrorField (::segue::store::pg::pq().PQresultErrorField)
#define PQresultErrorMessage (::segue::store::pg::pq().PQresultErrorMessage)
#define PQresultStatus (::segue::store::pg::pq().PQresultStatus)
#define PQsendFlushRequest (::segue::store::pg::pq().PQsendFlushRequest)
#define PQsendPrepare (::segue::store::pg::pq().PQsendPrepare)
#define PQsendQuery (::segue::store::pg::pq().PQsendQuery)
#define PQsendQueryParams (::segue::store::pg::pq().PQsendQueryParams)
#define PQsendQueryPrepared (::segue::store::pg::pq().PQsendQueryPrepared)
#define PQsetNoticeProcessor (::segue::store::pg::pq().PQsetNoticeProcessor)
#define PQsetnonblocking (::segue::store::pg::pq().PQsetnonblocking)
#define PQsocket (::segue::store::pg::pq().PQsocket)
#define PQstatus (::segue::store::pg::pq().PQstatus)
#define PQtransactionStatus (::segue::store::pg::pq().PQtransactionStatus)
#endif
