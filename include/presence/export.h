// File: presence/export.h
//
// PRESENCE_EXPORT marks the symbols of the public API. The library is built
// with hidden visibility, so anything not marked here stays private to it.
#ifndef PRESENCE_EXPORT_H_
#define PRESENCE_EXPORT_H_

#if defined(PRESENCE_STATIC_DEFINE)
#define PRESENCE_EXPORT
#elif defined(_WIN32)
#if defined(PRESENCE_BUILDING_LIBRARY)
#define PRESENCE_EXPORT __declspec(dllexport)
#else
#define PRESENCE_EXPORT __declspec(dllimport)
#endif
#else
#define PRESENCE_EXPORT __attribute__((visibility("default")))
#endif

#endif  // PRESENCE_EXPORT_H_
