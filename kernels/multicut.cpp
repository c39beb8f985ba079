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

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <algorithm>
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

// GAEC on n nodes: returns a cluster id per node (not canonical).
std::vector<int> gaec(int n, const std::vector<Edge>& edges) {
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
    std::vector<int> label(n);
    for (int i = 0; i < n; ++i) {
        int r = i;
        while (parent[r] != r) r = parent[r];
        label[i] = r;
    }
    return label;
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

std::vector<int> solve_component(const std::vector<int>& nodes, const std::vector<Edge>& edges, int exact_max_nodes) {
    const int m = static_cast<int>(nodes.size());
    if (m <= exact_max_nodes) {
        std::vector<double> W(static_cast<size_t>(m) * m, 0.0);
        for (const Edge& e : edges) {
            W[e.u * m + e.v] += e.w;
            W[e.v * m + e.u] += e.w;
        }
        return Exact(m, W).best;
    }
    std::vector<int> label = gaec(m, edges);
    Csr g(m, edges);
    Refiner(m, g, label).run();
    return label;
}

std::vector<int> solve_kl(int n, const std::vector<Edge>& edges, int exact_max_nodes) {
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
        std::vector<int> sub = solve_component(nodes, comp_edges[c], exact_max_nodes);
        for (size_t i = 0; i < nodes.size(); ++i) label[nodes[i]] = nodes[sub[i]];  // a member's id: unique per cluster
    }
    return label;
}

std::vector<int64_t> solve(int64_t n_nodes, nb::ndarray<const int64_t, nb::ndim<2>, nb::c_contig, nb::device::cpu> edges,
                           nb::ndarray<const double, nb::ndim<1>, nb::c_contig, nb::device::cpu> costs,
                           const std::string& method, int exact_max_nodes) {
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
            label = solve_kl(n, list, exact_max_nodes);
        else if (method == "gaec")
            label = gaec(n, list);
        else
            throw std::invalid_argument("method must be one of: kl, gaec");
    }
    return canonical(label);
}

}  // namespace

NB_MODULE(_multicut, m) {
    m.doc() = "Minimum-cost multicut (exact on small components, else GAEC + Kernighan-Lin moves).";
    m.def("solve", &solve, nb::arg("n_nodes"), nb::arg("edges"), nb::arg("costs"), nb::arg("method") = "kl",
          nb::arg("exact_max_nodes") = 10,
          "Cluster labels (n_nodes,) minimising the summed cost of the edges inside clusters.");
}
