// SPDX-License-Identifier: Apache-2.0

package config

import (
	"fmt"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
)

// selectorsFromCR checks a list of label selectors against upstream's duplicate rules
// and parses it. The result is sorted by its string form, so that advertisements with
// the same selectors in another order compare equal. what names one selector in
// messages, such as "node selector".
func selectorsFromCR(obj objectRef, field, what string, crs []metav1.LabelSelector) ([]labels.Selector, error) {
	if err := checkDuplicateSelectors(obj, field, what, crs); err != nil {
		return nil, err
	}
	if len(crs) == 0 {
		return nil, nil
	}
	selectors := make([]labels.Selector, 0, len(crs))
	for i := range crs {
		selector, err := metav1.LabelSelectorAsSelector(&crs[i])
		if err != nil {
			return nil, obj.errorf(fmt.Sprintf("%s[%d]", field, i), "failed to parse %s: %v", what, err)
		}
		selectors = append(selectors, selector)
	}
	slices.SortFunc(selectors, func(a, b labels.Selector) int { return strings.Compare(a.String(), b.String()) })
	return selectors, nil
}

// checkDuplicateSelectors rejects a selector listed twice, a match expression listed
// twice in a selector and a value listed twice in a match expression. The order of the
// values of an expression does not matter.
func checkDuplicateSelectors(obj objectRef, field, what string, crs []metav1.LabelSelector) error {
	canonical := make([]string, len(crs))
	for i, cr := range crs {
		itemField := fmt.Sprintf("%s[%d]", field, i)
		sorted := cr.DeepCopy()
		expressions := make([]string, len(sorted.MatchExpressions))
		for j := range sorted.MatchExpressions {
			expression := &sorted.MatchExpressions[j]
			expressionField := fmt.Sprintf("%s.matchExpressions[%d]", itemField, j)
			if err := checkDuplicateStrings(obj, expressionField+".values", "match expression value in label selector", expression.Values); err != nil {
				return err
			}
			slices.Sort(expression.Values)
			expressions[j] = expression.String()
			if slices.Contains(expressions[:j], expressions[j]) {
				return obj.errorf(expressionField, "duplicate definition of match expressions %q",
					fmt.Sprintf("%s %s %v", expression.Key, expression.Operator, expression.Values))
			}
		}
		canonical[i] = sorted.String()
		if slices.Contains(canonical[:i], canonical[i]) {
			return obj.errorf(itemField, "duplicate definition of %s %q", what, metav1.FormatLabelSelector(&cr))
		}
	}
	return nil
}

// checkDuplicateStrings rejects a value listed twice in field; what names the values
// in the message.
func checkDuplicateStrings(obj objectRef, field, what string, values []string) error {
	for i, value := range values {
		if slices.Contains(values[:i], value) {
			return obj.errorf(fmt.Sprintf("%s[%d]", field, i), "duplicate definition of %s %q", what, value)
		}
	}
	return nil
}

// objectsOf gives the metadata of each item, for label selection.
func objectsOf[T any, P interface {
	*T
	metav1.Object
}](items []T) []metav1.Object {
	objects := make([]metav1.Object, len(items))
	for i := range items {
		objects[i] = P(&items[i])
	}
	return objects
}

// matchingNames returns the names of the objects that match any of the selectors.
func matchingNames(objects []metav1.Object, selectors []labels.Selector) sets.Set[string] {
	names := sets.New[string]()
	for _, object := range objects {
		objectLabels := labels.Set(object.GetLabels())
		if slices.ContainsFunc(selectors, func(s labels.Selector) bool { return s.Matches(objectLabels) }) {
			names.Insert(object.GetName())
		}
	}
	return names
}

// selectedNodes returns the names of the nodes that match any of the selectors, or of
// every node when there is no selector.
func selectedNodes(nodes []metav1.Object, selectors []labels.Selector) sets.Set[string] {
	if len(selectors) == 0 {
		selectors = []labels.Selector{labels.Everything()}
	}
	return matchingNames(nodes, selectors)
}
