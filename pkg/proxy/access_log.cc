#include "pkg/proxy/access_log.h"
