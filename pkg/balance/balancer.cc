#include "pkg/balance/balancer.h"
