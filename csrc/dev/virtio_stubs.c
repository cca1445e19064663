/* virtio_stubs.c - placeholders for devices being written (virtio-9p). */
#include "../core/vm.h"
