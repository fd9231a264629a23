#include "pkg/proxy/proxy_protocol.h"
