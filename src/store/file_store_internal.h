// The file store's seam for tests and benchmarks: open it over any
// internal::FileSystem (e.g. a FaultInjectingFileSystem).
#ifndef PRESENCE_SRC_STORE_FILE_STORE_INTERNAL_H_
#define PRESENCE_SRC_STORE_FILE_STORE_INTERNAL_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "presence/file_store.h"
#include "src/store/file_system.h"

namespace presence::internal {

// FileStore::Open over `fs`, which is not owned and must outlive the store.
absl::StatusOr<std::unique_ptr<FileStore>> OpenFileStore(const std::string& dir,
                                                         const FileStoreOptions& options,
                                                         FileSystem* fs);

}  // namespace presence::internal

#endif  // PRESENCE_SRC_STORE_FILE_STORE_INTERNAL_H_
