#include "pkg/config/file_source.h"
