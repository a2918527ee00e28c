// fd's shim over libtorch's AOTInductor package loader (torch::inductor::AOTIModelPackageLoader):
// load a `.pt2` package, run it on tensors, read its metadata. Tensors cross as `at::Tensor*`, the
// pointer type tch's own C API uses, so nothing is copied: inputs are borrowed, outputs are new
// `at::Tensor` handles that Rust takes over (tch::Tensor::from_ptr). Every entry point catches
// C++ exceptions and returns the message as a malloc'd string the caller frees with fd_aoti_free_str.
#include <ATen/Version.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/version.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
char* dup(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p) std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}
}  // namespace

extern "C" {

// The libtorch version these headers belong to (the one tch links), e.g. "2.13.0".
const char* fd_aoti_torch_version() { return TORCH_VERSION; }

// The vector ISA libtorch's CPU kernels use here ("AVX512", "AVX2", "DEFAULT", ...), malloc'd:
// inductor compiles a CPU package's kernels for the compiling machine's ISA.
char* fd_aoti_cpu_capability() {
  try {
    return dup(at::get_cpu_capability());
  } catch (...) {
    return dup("?");
  }
}

// Load `path` (model "model") for device index `device_index` (-1: the package's own / CPU).
// Returns a handle, or null with *err set.
void* fd_aoti_load(const char* path, int device_index, char** err) {
  try {
    return new torch::inductor::AOTIModelPackageLoader(path, "model", false, 1,
                                                       static_cast<c10::DeviceIndex>(device_index));
  } catch (const std::exception& e) {
    *err = dup(e.what());
  } catch (...) {
    *err = dup("unknown C++ exception while loading the package");
  }
  return nullptr;
}

void fd_aoti_free(void* handle) { delete static_cast<torch::inductor::AOTIModelPackageLoader*>(handle); }

void fd_aoti_free_str(char* s) { std::free(s); }

// Run on `n` input tensors; on success *outs is a malloc'd array of *n_outs new tensor handles
// (free the array with fd_aoti_free_array, each handle is owned by the caller). Returns 0, or 1
// with *err set.
int fd_aoti_run(void* handle, at::Tensor** inputs, size_t n, at::Tensor*** outs, size_t* n_outs, char** err) {
  try {
    auto* loader = static_cast<torch::inductor::AOTIModelPackageLoader*>(handle);
    std::vector<at::Tensor> in;
    in.reserve(n);
    for (size_t i = 0; i < n; ++i) in.push_back(*inputs[i]);
    std::vector<at::Tensor> res = loader->run(in);
    auto** arr = static_cast<at::Tensor**>(std::malloc(sizeof(at::Tensor*) * (res.empty() ? 1 : res.size())));
    for (size_t i = 0; i < res.size(); ++i) arr[i] = new at::Tensor(std::move(res[i]));
    *outs = arr;
    *n_outs = res.size();
    return 0;
  } catch (const std::exception& e) {
    *err = dup(e.what());
  } catch (...) {
    *err = dup("unknown C++ exception while running the package");
  }
  return 1;
}

void fd_aoti_free_array(at::Tensor** arr) { std::free(arr); }

// The package's metadata as "key=value\n" lines (AOTI_DEVICE_KEY, ...), malloc'd.
char* fd_aoti_metadata(void* handle, char** err) {
  try {
    auto* loader = static_cast<torch::inductor::AOTIModelPackageLoader*>(handle);
    std::string out;
    for (const auto& kv : loader->get_metadata()) out += kv.first + "=" + kv.second + "\n";
    return dup(out);
  } catch (const std::exception& e) {
    *err = dup(e.what());
  }
  return nullptr;
}

}  // extern "C"
