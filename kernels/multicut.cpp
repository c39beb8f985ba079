// Minimum-cost multicut of a weighted graph (the person assembly's partitioning step), exposed to Python as
// fastpose.kernels._multicut through nanobind.
//
// Problem: nodes 0..n-1, edges (u, v) with a cost c; a partition into clusters costs the sum of c over the edges whose
// ends share a cluster (joined edges). Negative costs attract, positive costs repel. Internally the solver works with
// weights w = -c and maximises the joined weight, which is the same thing.
//
// Method ("kl"):
//   1. Split the graph into the connected components of its attractive (w > 0) edges. Some optimal partition never
//      puts nodes of two such components in one cluster (splitting such a cluster removes only edges of w <= 0), so
//      each component is solved on its own.
//   2. Components of at most exact_max_nodes nodes: exact depth-first search over partitions (restricted growth
//      order), pruned by the bound "current + every positive weight still to place".
//   3. Larger components: greedy additive edge contraction (GAEC: repeatedly join the two clusters with the largest
//      positive summed weight), then Kernighan-Lin style refinement: for each pair of clusters joined by an attractive
//      edge, and for each cluster against an empty one, a sequence of single-node moves between the two, each the best
//      remaining one even when it loses, is kept up to its best prefix; joining the two clusters outright is the other
//      candidate. Only strict improvements are applied, so the result is never worse than GAEC's.
// Method "gaec": step 3's contraction alone, on the whole graph (the baseline the tests compare against).
// GAEC keeps the summed weights between clusters in a dense matrix when the graph is small enough (fast row updates),
// else in hash maps.
//
// edge_costs: the assembly's edges and their costs in one pass over detection pairs (fastpose.assembly's numpy
// edge_features + logistic score are the reference it is tested against).

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <queue>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

namespace nb = nanobind;

namespace {

constexpr double kEps = 1e-9;  // improvements below this are rounding noise, not progress

struct Edge {
    int u, v;
    double w;  // weight = -cost; > 0 attracts
};

// Adjacency in compressed rows: neighbours of node i are nbr[start[i]..start[i+1]) with weights wt[...].
struct Csr {
    std::vector<int> start, nbr;
    std::vector<double> wt;
    Csr(int n, const std::vector<Edge>& edges) : start(n + 1, 0) {
        for (const Edge& e : edges) {
            start[e.u + 1]++;
            start[e.v + 1]++;
        }
        std::partial_sum(start.begin(), start.end(), start.begin());
        nbr.resize(start[n]);
        wt.resize(start[n]);
        std::vector<int> fill(start.begin(), start.end() - 1);
        for (const Edge& e : edges) {
            nbr[fill[e.u]] = e.v;
            wt[fill[e.u]++] = e.w;
            nbr[fill[e.v]] = e.u;
            wt[fill[e.v]++] = e.w;
        }
    }
};

constexpr int kDenseMaxNodes = 512;  // default: dense GAEC up to this many nodes, an (n, n) matrix of 2 MiB at most

// The cluster of each node after merges recorded as parent links (a merged node points at the one it joined).
std::vector<int> roots(const std::vector<int>& parent) {
    std::vector<int> label(parent.size());
    for (size_t i = 0; i < parent.size(); ++i) {
        int r = static_cast<int>(i);
        while (parent[r] != r) r = parent[r];
        label[i] = r;
    }
    return label;
}

// GAEC with the cluster weights in a dense (n, n) matrix: a merge adds row v to row u in O(n). Returns a cluster id
// per node (not canonical).
std::vector<int> gaec_dense(int n, const std::vector<Edge>& edges) {
    std::vector<double> W(static_cast<size_t>(n) * n, 0.0);  // (n, n) summed weight between live clusters
    for (const Edge& e : edges) {
        W[static_cast<size_t>(e.u) * n + e.v] += e.w;
        W[static_cast<size_t>(e.v) * n + e.u] += e.w;
    }
    using Item = std::tuple<double, int, int>;
    std::vector<Item> items;
    for (int u = 0; u < n; ++u)
        for (int v = u + 1; v < n; ++v)
            if (W[static_cast<size_t>(u) * n + v] > 0) items.emplace_back(W[static_cast<size_t>(u) * n + v], u, v);
    std::priority_queue<Item> heap(std::less<Item>(), std::move(items));  // lazy: stale entries are skipped
    std::vector<int> parent(n);
    std::iota(parent.begin(), parent.end(), 0);
    std::vector<int> live(n);  // the live clusters, in no particular order
    std::iota(live.begin(), live.end(), 0);
    std::vector<int> slot(n);  // position of each live cluster in `live`
    std::iota(slot.begin(), slot.end(), 0);
    while (!heap.empty()) {
        auto [w, u, v] = heap.top();
        heap.pop();
        if (parent[u] != u || parent[v] != v || W[static_cast<size_t>(u) * n + v] != w) continue;  // stale
        double* ru = &W[static_cast<size_t>(u) * n];
        double* rv = &W[static_cast<size_t>(v) * n];
        ru[v] = 0;
        W[static_cast<size_t>(v) * n + u] = 0;
        for (int x : live) {
            if (x == u || x == v || rv[x] == 0) continue;
            double sum = ru[x] + rv[x];
            ru[x] = sum;
            W[static_cast<size_t>(x) * n + u] = sum;
            W[static_cast<size_t>(x) * n + v] = 0;
            rv[x] = 0;
            if (sum > 0) heap.emplace(sum, std::min(u, x), std::max(u, x));
        }
        parent[v] = u;
        int last = live.back();  // drop v from the live list
        live[slot[v]] = last;
        slot[last] = slot[v];
        live.pop_back();
    }
    return roots(parent);
}

// GAEC on n nodes: returns a cluster id per node (not canonical).
std::vector<int> gaec(int n, const std::vector<Edge>& edges, int dense_max_nodes) {
    if (n <= dense_max_nodes) return gaec_dense(n, edges);
    std::vector<std::unordered_map<int, double>> adj(n);  // cluster -> neighbour cluster -> summed weight
    for (const Edge& e : edges) {
        adj[e.u][e.v] += e.w;
        adj[e.v][e.u] += e.w;
    }
    using Item = std::tuple<double, int, int>;
    std::priority_queue<Item> heap;  // lazy: stale entries are skipped when popped
    for (int u = 0; u < n; ++u)
        for (const auto& [v, w] : adj[u])
            if (u < v && w > 0) heap.emplace(w, u, v);
    std::vector<int> parent(n);
    std::iota(parent.begin(), parent.end(), 0);
    std::vector<char> alive(n, 1);
    while (!heap.empty()) {
        auto [w, u, v] = heap.top();
        heap.pop();
        if (!alive[u] || !alive[v]) continue;
        auto it = adj[u].find(v);
        if (it == adj[u].end() || it->second != w) continue;  // stale
        if (adj[u].size() < adj[v].size()) std::swap(u, v);   // merge the smaller map into the larger
        adj[u].erase(v);
        for (const auto& [x, wx] : adj[v]) {
            if (x == u) continue;
            double& sum = adj[u][x];
            sum += wx;
            adj[x].erase(v);
            adj[x][u] = sum;
            if (sum > 0) heap.emplace(sum, std::min(u, x), std::max(u, x));
        }
        adj[v].clear();
        alive[v] = 0;
        parent[v] = u;
    }
    return roots(parent);
}

// Exact maximum of the joined weight over all partitions of m nodes (dense weights W, m x m, row-major).
struct Exact {
    int m;
    const std::vector<double>& W;
    std::vector<double> rest;  // rest[i] = sum of positive W[a][b] over b < a, a >= i: the most still to gain
    std::vector<int> cur, best;
    double best_value = -1.0;

    Exact(int m_, const std::vector<double>& W_) : m(m_), W(W_), rest(m_ + 1, 0.0), cur(m_, 0), best(m_, 0) {
        for (int i = m - 1; i >= 0; --i) {
            double pos = 0;
            for (int j = 0; j < i; ++j) pos += std::max(0.0, W[i * m + j]);
            rest[i] = rest[i + 1] + pos;
        }
        std::iota(best.begin(), best.end(), 0);  // all singletons: value 0
        best_value = 0.0;
        search(0, 0, 0.0);
    }

    void search(int i, int clusters, double value) {
        if (value + rest[i] <= best_value + kEps) return;
        if (i == m) {
            best_value = value;
            best = cur;
            return;
        }
        for (int c = 0; c <= clusters; ++c) {
            double gain = 0;
            for (int j = 0; j < i; ++j)
                if (cur[j] == c) gain += W[i * m + j];
            cur[i] = c;
            search(i + 1, std::max(clusters, c + 1), value + gain);
        }
    }
};

// Kernighan-Lin refinement of a partition of the graph g (labels are cluster ids in 0..n-1).
class Refiner {
   public:
    Refiner(int n, const Csr& g, std::vector<int>& label) : n_(n), g_(g), label_(label), pos_(n, -1) {
        members_.assign(n, {});
        for (int i = 0; i < n; ++i) members_[label_[i]].push_back(i);
    }

    void run(int max_sweeps = 100) {
        std::vector<char> dirty(n_, 1);
        for (int sweep = 0; sweep < max_sweeps; ++sweep) {
            std::vector<char> next_dirty(n_, 0);
            bool improved = false;
            // Candidate pairs: clusters joined by an attractive edge, one of them changed since the last sweep.
            std::vector<std::pair<int, int>> pairs;
            for (int i = 0; i < n_; ++i)
                for (int k = g_.start[i]; k < g_.start[i + 1]; ++k) {
                    int a = label_[i], b = label_[g_.nbr[k]];
                    if (a < b && g_.wt[k] > 0 && (dirty[a] || dirty[b])) pairs.emplace_back(a, b);
                }
            std::sort(pairs.begin(), pairs.end());
            pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());
            for (int a = 0; a < n_; ++a)
                if (dirty[a] && !members_[a].empty()) pairs.emplace_back(a, -1);  // a against an empty cluster
            for (auto [a, b] : pairs) {
                if (members_[a].empty() || (b >= 0 && members_[b].empty())) continue;  // emptied by an earlier move
                if (b < 0) b = free_cluster();
                if (b < 0) continue;
                if (improve_pair(a, b)) {
                    improved = true;
                    next_dirty[a] = next_dirty[b] = 1;
                }
            }
            if (!improved) break;
            dirty.swap(next_dirty);
        }
    }

   private:
    int free_cluster() const {
        for (int c = 0; c < n_; ++c)
            if (members_[c].empty()) return c;
        return -1;
    }

    // One KL pass between clusters a and b (b may be empty); returns whether the partition improved.
    bool improve_pair(int a, int b) {
        std::vector<int> nodes(members_[a]);
        nodes.insert(nodes.end(), members_[b].begin(), members_[b].end());
        const int m = static_cast<int>(nodes.size());
        for (int i = 0; i < m; ++i) pos_[nodes[i]] = i;
        std::vector<double> W(static_cast<size_t>(m) * m, 0.0);  // local dense weights
        for (int i = 0; i < m; ++i) {
            int u = nodes[i];
            for (int k = g_.start[u]; k < g_.start[u + 1]; ++k) {
                int p = pos_[g_.nbr[k]];
                if (p >= 0 && p != i) W[i * m + p] += g_.wt[k];
            }
        }
        for (int i = 0; i < m; ++i) pos_[nodes[i]] = -1;
        const int na = static_cast<int>(members_[a].size());
        std::vector<char> side(m);  // 0: in a, 1: in b
        for (int i = 0; i < m; ++i) side[i] = i < na ? 0 : 1;
        double between = 0;
        std::vector<double> gain(m, 0.0);  // joined-weight change if node i switches side
        for (int i = 0; i < m; ++i)
            for (int j = 0; j < m; ++j) {
                double w = W[i * m + j];
                gain[i] += side[i] == side[j] ? -w : w;
                if (i < j && side[i] != side[j]) between += w;
            }
        std::vector<char> moved(m, 0);
        std::vector<int> order;
        double total = 0, best_total = 0;
        int best_len = 0;
        for (int step = 0; step < m; ++step) {
            int pick = -1;
            for (int i = 0; i < m; ++i)
                if (!moved[i] && (pick < 0 || gain[i] > gain[pick])) pick = i;
            total += gain[pick];
            moved[pick] = 1;
            order.push_back(pick);
            side[pick] ^= 1;
            for (int j = 0; j < m; ++j) {
                if (j == pick) continue;
                double w = W[pick * m + j];
                gain[j] += side[j] == side[pick] ? -2 * w : 2 * w;
            }
            if (total > best_total + kEps) {
                best_total = total;
                best_len = step + 1;
            }
        }
        const bool join = between > kEps && between > best_total;
        if (!join && best_len == 0) return false;
        // Rebuild both member lists from the chosen outcome.
        std::vector<char> final_side(m);
        for (int i = 0; i < m; ++i) final_side[i] = i < na ? 0 : 1;
        if (join) {
            std::fill(final_side.begin(), final_side.end(), 0);
        } else {
            for (int s = 0; s < best_len; ++s) final_side[order[s]] ^= 1;
        }
        members_[a].clear();
        members_[b].clear();
        for (int i = 0; i < m; ++i) {
            int c = final_side[i] ? b : a;
            label_[nodes[i]] = c;
            members_[c].push_back(nodes[i]);
        }
        return true;
    }

    int n_;
    const Csr& g_;
    std::vector<int>& label_;
    std::vector<int> pos_;
    std::vector<std::vector<int>> members_;
};

// Renumber labels 0, 1, 2, ... in order of first appearance.
std::vector<int64_t> canonical(const std::vector<int>& label) {
    std::unordered_map<int, int64_t> id;
    std::vector<int64_t> out(label.size());
    for (size_t i = 0; i < label.size(); ++i) {
        auto it = id.find(label[i]);
        if (it == id.end()) it = id.emplace(label[i], static_cast<int64_t>(id.size())).first;
        out[i] = it->second;
    }
    return out;
}

std::vector<int> solve_component(const std::vector<int>& nodes, const std::vector<Edge>& edges, int exact_max_nodes,
                                 int dense_max_nodes) {
    const int m = static_cast<int>(nodes.size());
    if (m <= exact_max_nodes) {
        std::vector<double> W(static_cast<size_t>(m) * m, 0.0);
        for (const Edge& e : edges) {
            W[e.u * m + e.v] += e.w;
            W[e.v * m + e.u] += e.w;
        }
        return Exact(m, W).best;
    }
    std::vector<int> label = gaec(m, edges, dense_max_nodes);
    Csr g(m, edges);
    Refiner(m, g, label).run();
    return label;
}

std::vector<int> solve_kl(int n, const std::vector<Edge>& edges, int exact_max_nodes, int dense_max_nodes) {
    // Components of the attractive edges (union-find).
    std::vector<int> root(n);
    std::iota(root.begin(), root.end(), 0);
    auto find = [&](int x) {
        while (root[x] != x) x = root[x] = root[root[x]];
        return x;
    };
    for (const Edge& e : edges)
        if (e.w > 0) root[find(e.u)] = find(e.v);
    std::vector<int> comp(n), local(n);
    std::vector<std::vector<int>> comp_nodes;
    std::unordered_map<int, int> comp_of_root;
    for (int i = 0; i < n; ++i) {
        auto [it, fresh] = comp_of_root.emplace(find(i), static_cast<int>(comp_nodes.size()));
        if (fresh) comp_nodes.emplace_back();
        comp[i] = it->second;
        local[i] = static_cast<int>(comp_nodes[it->second].size());
        comp_nodes[it->second].push_back(i);
    }
    std::vector<std::vector<Edge>> comp_edges(comp_nodes.size());
    for (const Edge& e : edges)
        if (comp[e.u] == comp[e.v]) comp_edges[comp[e.u]].push_back({local[e.u], local[e.v], e.w});
    std::vector<int> label(n);
    for (size_t c = 0; c < comp_nodes.size(); ++c) {
        const auto& nodes = comp_nodes[c];
        if (nodes.size() == 1) {
            label[nodes[0]] = nodes[0];
            continue;
        }
        std::vector<int> sub = solve_component(nodes, comp_edges[c], exact_max_nodes, dense_max_nodes);
        for (size_t i = 0; i < nodes.size(); ++i) label[nodes[i]] = nodes[sub[i]];  // a member's id: unique per cluster
    }
    return label;
}

std::vector<int64_t> solve(int64_t n_nodes, nb::ndarray<const int64_t, nb::ndim<2>, nb::c_contig, nb::device::cpu> edges,
                           nb::ndarray<const double, nb::ndim<1>, nb::c_contig, nb::device::cpu> costs,
                           const std::string& method, int exact_max_nodes, int dense_max_nodes) {
    if (n_nodes < 0) throw std::invalid_argument("n_nodes must be >= 0");
    const size_t count = edges.shape(0);
    if (edges.shape(1) != 2 || costs.shape(0) != count)
        throw std::invalid_argument("edges must be (E, 2) and costs (E,)");
    const int n = static_cast<int>(n_nodes);
    const int64_t* e = edges.data();
    const double* c = costs.data();
    std::vector<Edge> list;
    list.reserve(count);
    for (size_t i = 0; i < count; ++i) {
        int64_t u = e[2 * i], v = e[2 * i + 1];
        if (u < 0 || v < 0 || u >= n_nodes || v >= n_nodes) throw std::out_of_range("edge end outside 0..n_nodes-1");
        if (u == v) continue;  // a node always shares its own cluster: a constant
        list.push_back({static_cast<int>(u), static_cast<int>(v), -c[i]});
    }
    std::vector<int> label;
    {
        nb::gil_scoped_release release;
        if (method == "kl")
            label = solve_kl(n, list, exact_max_nodes, dense_max_nodes);
        else if (method == "gaec")
            label = gaec(n, list, dense_max_nodes);
        else
            throw std::invalid_argument("method must be one of: kl, gaec");
    }
    return canonical(label);
}

template <typename T>
using Array = nb::ndarray<const T, nb::c_contig, nb::device::cpu>;

// A numpy array owning a heap copy of `data`, shaped `shape`.
template <typename T>
nb::ndarray<nb::numpy, T> to_numpy(std::vector<T>&& data, std::initializer_list<size_t> shape) {
    auto* owned = new std::vector<T>(std::move(data));
    nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
    return nb::ndarray<nb::numpy, T>(owned->data(), shape.size(), shape.begin(), owner);
}

// Edges of the assembly graph and their costs, every detection pair (a < b) once, in row-major upper-triangle order:
// pairs of one joint type get same_type_cost; pairs of allowed types get -clip(features . weights, -clip, clip), the
// features being (1, dist_ab, dist_ba, angle_ab, angle_ba) as in fastpose.assembly.edge_features; other pairs none.
// kind (N,) int64; centre, pos (N, 2) float64 (cell centres, refined positions); pred (N, K, 2) float64 (offset
// predicted from each detection to each joint type); std (K, K, 2) float64; allowed (K, K) bool; weights (5,).
// prune: drop the repulsive edges (cost >= 0) whose ends lie in different components of the attractive (cost < 0)
// edges. solve_kl drops exactly these itself (keeping the others in their order), so its labels are unchanged; in a
// crowded image they are nearly all of the edges.
std::tuple<nb::ndarray<nb::numpy, int64_t>, nb::ndarray<nb::numpy, double>> edge_costs(
    Array<int64_t> kind, Array<double> centre, Array<double> pos, Array<double> pred, Array<double> stdev,
    Array<bool> allowed, Array<double> weights, double clip, double same_type_cost, bool prune) {
    const size_t n = kind.shape(0);
    if (centre.ndim() != 2 || pos.ndim() != 2 || centre.shape(0) != n || pos.shape(0) != n || centre.shape(1) != 2 ||
        pos.shape(1) != 2)
        throw std::invalid_argument("centre and pos must be (N, 2) for kind (N,)");
    if (stdev.ndim() != 3 || stdev.shape(1) != stdev.shape(0) || stdev.shape(2) != 2)
        throw std::invalid_argument("std must be (K, K, 2)");
    const size_t k = stdev.shape(0);
    if (pred.ndim() != 3 || pred.shape(0) != n || pred.shape(1) != k || pred.shape(2) != 2)
        throw std::invalid_argument("pred must be (N, K, 2)");
    if (allowed.ndim() != 2 || allowed.shape(0) != k || allowed.shape(1) != k)
        throw std::invalid_argument("allowed must be (K, K)");
    if (weights.ndim() != 1 || weights.shape(0) != 5) throw std::invalid_argument("weights must be (5,)");
    const int64_t* kd = kind.data();
    for (size_t i = 0; i < n; ++i)
        if (kd[i] < 0 || static_cast<size_t>(kd[i]) >= k) throw std::out_of_range("kind outside 0..K-1");
    const double *c = centre.data(), *q = pos.data(), *pr = pred.data(), *sd = stdev.data(), *wt = weights.data();
    const bool* ok = allowed.data();
    std::vector<int64_t> edges;
    std::vector<double> costs;
    {
        nb::gil_scoped_release release;
        // The angle terms lie in [w3, w4] . [0, pi]^2: when even their most favourable value leaves the logit beyond
        // +-clip, the clipped logit is known without the two atan2 calls (most pairs of a crowded image).
        const double pi = 3.14159265358979323846;
        const double angle_hi = pi * (std::max(wt[3], 0.0) + std::max(wt[4], 0.0));
        const double angle_lo = pi * (std::min(wt[3], 0.0) + std::min(wt[4], 0.0));
        std::vector<double> inv(k * k * 2);  // (K, K, 2) 1 / std: a product per axis instead of a division
        for (size_t i = 0; i < inv.size(); ++i) inv[i] = 1.0 / sd[i];
        std::vector<size_t> per_type(k, 0);  // the exact edge count, so that the loop writes without growth checks
        for (size_t i = 0; i < n; ++i) per_type[kd[i]]++;
        size_t count = 0;
        for (size_t s = 0; s < k; ++s)
            for (size_t e = s; e < k; ++e)
                count += e == s ? per_type[s] * (per_type[s] - (per_type[s] > 0)) / 2
                                : (ok[s * k + e] || ok[e * k + s] ? per_type[s] * per_type[e] : 0);
        edges.resize(2 * count);
        costs.resize(count);
        // (dist, angle) from a's prediction towards b's joint type to b itself (a of type s, b of type e).
        auto miss = [&](size_t a, size_t s, size_t b, size_t e, bool with_angle, double& dist, double& angle) {
            const double px = pr[(a * k + e) * 2], py = pr[(a * k + e) * 2 + 1];
            const double rx = q[b * 2] - c[a * 2], ry = q[b * 2 + 1] - c[a * 2 + 1];
            const double dx = (px - rx) * inv[(s * k + e) * 2], dy = (py - ry) * inv[(s * k + e) * 2 + 1];
            dist = std::sqrt(dx * dx + dy * dy);
            angle = with_angle ? std::abs(std::atan2(px * ry - py * rx, px * rx + py * ry)) : 0.0;
        };
        size_t out = 0;
        for (size_t a = 0; a < n; ++a) {
            const size_t s = kd[a];
            for (size_t b = a + 1; b < n; ++b) {
                const size_t e = kd[b];
                double cost;
                if (s == e) {
                    cost = same_type_cost;
                } else if (ok[s * k + e] || ok[e * k + s]) {
                    double d_ab, d_ba, g_ab, g_ba;
                    miss(a, s, b, e, false, d_ab, g_ab);
                    miss(b, e, a, s, false, d_ba, g_ba);
                    double logit = wt[0] + wt[1] * d_ab + wt[2] * d_ba;
                    if (logit + angle_hi <= -clip) {
                        logit = -clip;
                    } else if (logit + angle_lo >= clip) {
                        logit = clip;
                    } else {
                        miss(a, s, b, e, true, d_ab, g_ab);
                        miss(b, e, a, s, true, d_ba, g_ba);
                        logit = std::clamp(logit + wt[3] * g_ab + wt[4] * g_ba, -clip, clip);
                    }
                    cost = -logit;
                } else {
                    continue;
                }
                edges[2 * out] = static_cast<int64_t>(a);
                edges[2 * out + 1] = static_cast<int64_t>(b);
                costs[out++] = cost;
            }
        }
        if (prune) {
            std::vector<size_t> root(n);  // union-find over the attractive edges, as in solve_kl
            std::iota(root.begin(), root.end(), size_t{0});
            auto find = [&](size_t x) {
                while (root[x] != x) x = root[x] = root[root[x]];
                return x;
            };
            for (size_t i = 0; i < costs.size(); ++i)
                if (costs[i] < 0) root[find(edges[2 * i])] = find(edges[2 * i + 1]);
            size_t kept = 0;
            for (size_t i = 0; i < costs.size(); ++i)
                if (costs[i] < 0 || find(edges[2 * i]) == find(edges[2 * i + 1])) {
                    edges[2 * kept] = edges[2 * i];
                    edges[2 * kept + 1] = edges[2 * i + 1];
                    costs[kept++] = costs[i];
                }
            edges.resize(2 * kept);
            costs.resize(kept);
            edges.shrink_to_fit();
            costs.shrink_to_fit();
        }
    }
    const size_t count = costs.size();
    return {to_numpy(std::move(edges), {count, 2}), to_numpy(std::move(costs), {count})};
}

}  // namespace

NB_MODULE(_multicut, m) {
    m.doc() = "Minimum-cost multicut (exact on small components, else GAEC + Kernighan-Lin moves).";
    m.def("solve", &solve, nb::arg("n_nodes"), nb::arg("edges"), nb::arg("costs"), nb::arg("method") = "kl",
          nb::arg("exact_max_nodes") = 10, nb::arg("dense_max_nodes") = kDenseMaxNodes,
          "Cluster labels (n_nodes,) minimising the summed cost of the edges inside clusters.");
    m.def("edge_costs", &edge_costs, nb::arg("kind"), nb::arg("centre"), nb::arg("pos"), nb::arg("pred"),
          nb::arg("std"), nb::arg("allowed"), nb::arg("weights"), nb::arg("clip"), nb::arg("same_type_cost"),
          nb::arg("prune") = false,
          "(edges (E, 2) int64, costs (E,) float64) of every same-type or allowed detection pair, a < b "
          "(prune: less the repulsive ones between components of the attractive edges, which the kl solver drops).");
}
