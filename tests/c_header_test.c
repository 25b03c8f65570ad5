#include "presence/c.h"
