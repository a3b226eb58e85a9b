#include "nimbus/storage/chunk.hpp"

#include "sha256_x2.hpp"

#include <cstring>
#include <stdexcept>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

namespace nimbus::storage {

namespace {

constexpr std::string_view magic = "NCK1";
constexpr size_t tag_size = 16;

// One cipher context per thread: creating one costs more than sealing a
// small chunk's metadata, and contexts are not thread-safe.
EVP_CIPHER_CTX* thread_cipher() {
  struct holder {
    EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
    ~holder() {
      EVP_CIPHER_CTX_free(ctx);
    }
  };
  thread_local holder h;
  if (h.ctx == nullptr)
    throw std::bad_alloc();
  return h.ctx;
}

const unsigned char zero_nonce[12] = {};

std::string short_id(const chunk_id& id) {
  return chunk_id_hex(id).substr(0, 16);
}

} // namespace

std::string chunk_id_hex(const chunk_id& id) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out(64, '0');
  for (size_t i = 0; i < id.size(); ++i) {
    out[2 * i] = digits[id[i] >> 4];
    out[2 * i + 1] = digits[id[i] & 0xf];
  }
  return out;
}

bool parse_chunk_id(std::string_view hex, chunk_id& out) {
  if (hex.size() != 64)
    return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    return -1;
  };
  for (size_t i = 0; i < 32; ++i) {
    int hi = nibble(hex[2 * i]);
    int lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

size_t chunk_id_hash::operator()(const chunk_id& id) const noexcept {
  size_t h;
  std::memcpy(&h, id.data(), sizeof(h));
  return h;
}

namespace {

// sealed = magic || AES-256-GCM(key, zero nonce, plaintext) || tag.
void encrypt_chunk(const chunk_key& key, std::string_view plaintext, std::string& sealed) {
  sealed.resize(magic.size() + plaintext.size() + tag_size);
  std::memcpy(sealed.data(), magic.data(), magic.size());
  auto* out = reinterpret_cast<unsigned char*>(sealed.data() + magic.size());
  auto* ctx = thread_cipher();
  int len = 0;
  if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.data(), zero_nonce) != 1
      || EVP_EncryptUpdate(ctx, out, &len, reinterpret_cast<const unsigned char*>(plaintext.data()),
                           static_cast<int>(plaintext.size()))
           != 1
      || EVP_EncryptFinal_ex(ctx, out + len, &len) != 1
      || EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, tag_size, out + plaintext.size()) != 1)
    throw std::runtime_error("seal_chunk: AES-256-GCM failed");
}

void check_size(std::string_view plaintext) {
  if (plaintext.size() > chunk_size)
    throw std::invalid_argument("seal_chunk: plaintext larger than a chunk");
}

} // namespace

chunk_ref seal_chunk_into(const convergence_secret& secret, std::string_view plaintext,
                          std::string& sealed) {
  check_size(plaintext);
  chunk_ref ref;
  ref.size = static_cast<uint32_t>(plaintext.size());
  unsigned int key_len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
       ref.key.data(), &key_len);
  encrypt_chunk(ref.key, plaintext, sealed);
  SHA256(reinterpret_cast<const unsigned char*>(sealed.data()), sealed.size(), ref.id.data());
  return ref;
}

struct chunk_sealer::state {
  // HMAC-SHA256 with the secret's key blocks absorbed, copied per chunk.
  hmac_sha256_state mac;
  // Two slots used in turn: the chunk whose id is still to be hashed, and
  // the one handed out last.
  sealed_chunk slots[2];
  int pending = -1;
  int next = 0;

  ~state() {
    OPENSSL_cleanse(&mac, sizeof mac);
    for (auto& slot : slots)
      OPENSSL_cleanse(slot.ref.key.data(), slot.ref.key.size());
  }
};

chunk_sealer::chunk_sealer(const convergence_secret& secret) : state_(std::make_unique<state>()) {
  hmac_sha256_init(state_->mac, secret.data(), secret.size());
  for (auto& slot : state_->slots)
    slot.bytes.reserve(chunk_size + chunk_overhead);
}

chunk_sealer::~chunk_sealer() = default;

const sealed_chunk* chunk_sealer::seal(std::string_view plaintext) {
  check_size(plaintext);
  auto& st = *state_;
  hmac_sha256_state mac = st.mac;
  sealed_chunk* done = nullptr;
  if (st.pending >= 0) {
    done = &st.slots[st.pending];
    sha256_state id;
    sha256_init(id);
    sha256_update2(mac.inner, plaintext.data(), plaintext.size(), id, done->bytes.data(),
                   done->bytes.size());
    sha256_finish(id, done->ref.id.data());
  } else {
    sha256_update(mac.inner, plaintext.data(), plaintext.size());
  }
  auto& fresh = st.slots[st.next];
  hmac_sha256_finish(mac, fresh.ref.key.data());
  OPENSSL_cleanse(&mac, sizeof mac);
  fresh.ref.size = static_cast<uint32_t>(plaintext.size());
  fresh.ref.id = {};
  encrypt_chunk(fresh.ref.key, plaintext, fresh.bytes);
  st.pending = st.next;
  st.next ^= 1;
  return done;
}

const sealed_chunk* chunk_sealer::flush() {
  auto& st = *state_;
  if (st.pending < 0)
    return nullptr;
  auto& done = st.slots[st.pending];
  sha256_state id;
  sha256_init(id);
  sha256_update(id, done.bytes.data(), done.bytes.size());
  sha256_finish(id, done.ref.id.data());
  st.next = st.pending ^ 1;
  st.pending = -1;
  return &done;
}

void seal_chunks(const convergence_secret& secret, const std::vector<std::string_view>& plains,
                 std::vector<sealed_chunk>& out) {
  out.clear();
  out.reserve(plains.size());
  chunk_sealer sealer(secret);
  for (auto plain : plains)
    if (auto* done = sealer.seal(plain))
      out.push_back(*done);
  if (auto* done = sealer.flush())
    out.push_back(*done);
}

sealed_chunk seal_chunk(const convergence_secret& secret, std::string_view plaintext) {
  sealed_chunk result;
  result.ref = seal_chunk_into(secret, plaintext, result.bytes);
  return result;
}

std::string open_chunk(const chunk_ref& ref, std::string_view sealed, std::string& plaintext) {
  if (sealed.size() != ref.size + chunk_overhead || ref.size > chunk_size)
    return "chunk " + short_id(ref.id) + ": wrong length";
  if (sealed.substr(0, magic.size()) != magic)
    return "chunk " + short_id(ref.id) + ": bad format";
  plaintext.resize(ref.size);
  auto* ctx = thread_cipher();
  auto* in = reinterpret_cast<const unsigned char*>(sealed.data() + magic.size());
  auto* out = reinterpret_cast<unsigned char*>(plaintext.data());
  int len = 0;
  unsigned char tag[tag_size];
  std::memcpy(tag, in + ref.size, tag_size);
  bool ok = EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, ref.key.data(), zero_nonce) == 1
            && EVP_DecryptUpdate(ctx, out, &len, in, static_cast<int>(ref.size)) == 1
            && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, tag_size, tag) == 1
            && EVP_DecryptFinal_ex(ctx, out + len, &len) == 1;
  if (!ok) {
    plaintext.clear();
    return "chunk " + short_id(ref.id) + ": authentication failed";
  }
  return {};
}

bool chunk_id_matches(const chunk_id& id, std::string_view sealed) {
  chunk_id actual;
  SHA256(reinterpret_cast<const unsigned char*>(sealed.data()), sealed.size(), actual.data());
  return actual == id;
}

std::string memory_chunk_store::put(const chunk_id& id, std::string_view sealed) {
  std::lock_guard lock(mutex_);
  chunks_.try_emplace(id, sealed);
  return {};
}

std::string memory_chunk_store::sync() {
  return {};
}

std::string memory_chunk_store::get(const chunk_id& id, std::string& sealed) {
  std::lock_guard lock(mutex_);
  auto i = chunks_.find(id);
  if (i == chunks_.end())
    return "chunk " + short_id(id) + ": not found";
  ++reads_;
  sealed = i->second;
  return {};
}

bool memory_chunk_store::contains(const chunk_id& id) {
  std::lock_guard lock(mutex_);
  return chunks_.count(id) != 0;
}

std::string memory_chunk_store::remove(const chunk_id& id) {
  std::lock_guard lock(mutex_);
  chunks_.erase(id);
  return {};
}

std::string memory_chunk_store::list(std::vector<chunk_id>& ids) {
  std::lock_guard lock(mutex_);
  ids.clear();
  for (auto& [id, bytes] : chunks_)
    ids.push_back(id);
  return {};
}

bool memory_chunk_store::local() const {
  return true;
}

uint64_t memory_chunk_store::reads() const {
  std::lock_guard lock(mutex_);
  return reads_;
}

void memory_chunk_store::corrupt(const chunk_id& id, std::string bytes) {
  std::lock_guard lock(mutex_);
  chunks_[id] = std::move(bytes);
}

} // namespace nimbus::storage
