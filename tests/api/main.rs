//! Integration tests: carve against real libvirt with QEMU (software emulation) and guests
//! booted from images/, plus the libvirt test driver for fast checks of carve's own logic.

mod bad_input;
mod browser;
mod capacity;
mod clones;
mod console;
mod debian_guest;
mod hardening;
mod helpers;
mod hosts;
mod images;
mod lb;
mod lb_http;
mod observability;
mod openapi;
mod panel;
mod pools;
mod pools_guests;
mod reconciler;
mod recovery;
mod scale_groups;
mod scale_groups_guests;
mod sessions;
mod sftp;
mod tenancy;
mod vm_lifecycle;
