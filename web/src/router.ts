import { useEffect, useState } from "preact/hooks";

// Hash routes (#/goals/<id>): Envoy serves only the exact files of web/dist, so
// every page must be reachable from index.html. Hand-written because the app needs
// only this (a path, its query, a hook), not a router library's history handling.
export type Route = { path: string[]; query: URLSearchParams };

export function current(): Route {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path = "", query = ""] = hash.split("?", 2);
  // Paystack appends ?trxref=&reference= to the callback URL; if that URL had no
  // hash query yet, the parameters may land before the hash instead.
  const params = new URLSearchParams(query);
  new URLSearchParams(location.search).forEach((value, key) => params.has(key) || params.set(key, value));
  return { path: path.split("/").filter(Boolean).map(decodeURIComponent), query: params };
}

export function href(...parts: string[]): string {
  return "#/" + parts.map(encodeURIComponent).join("/");
}

export function navigate(to: string): void {
  location.hash = to.replace(/^#/, "");
}

export function useRoute(): Route {
  const [route, setRoute] = useState(current());
  useEffect(() => {
    const listener = () => setRoute(current());
    window.addEventListener("hashchange", listener);
    return () => window.removeEventListener("hashchange", listener);
  }, []);
  return route;
}
